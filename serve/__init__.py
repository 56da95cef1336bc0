"""lexalign.serve: serving a run and the lawyers' chat UI.

    launch.py      `lexalign serve`: vLLM's OpenAI-compatible server for a run (base + LoRA adapter, or a
                   merged/full model), engine discovery, API key, readiness, clean shutdown; `start_server()`
    gateway.py     the authenticating front of the served API: every route keyed but /health, admin routes
                   off; the engine listens only on a private Unix socket behind it
    candidates.py  `lexalign candidates`: N sampled answers per prompt -> ranking tasks in the preference store
    chat.py        `lexalign chat`: the Gradio chat UI (streaming via the `openai` client, login, feedback,
                   sessions saved per user)
    contract_view.py  the contract beside the conversation: escaped HTML, sections anchored, citations marked,
                   links that scroll to them
    documents.py   uploaded contracts: TXT/PDF/DOCX parsing within bounds, sections (headings), chunking, BM25
                   chunk selection, locating quotes
    review.py      review tasks (41 CUAD clause categories, unfair clauses, obligations, questions) -> prompts
                   that fit the model's context
"""
