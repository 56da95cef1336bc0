"""Review tasks of the chat UI and the prompts they send: find a CUAD clause, flag potentially unfair
clauses, summarize obligations and dates, or answer a free question, always over selected contract excerpts.

The wording follows the training data (``lexalign.data.prompts``): the same system prompt, the same "Find
the <category> clause in this contract excerpt (<description>). Quote it exactly, or answer 'Not present.'"
instruction, and the excerpt after the same ``Excerpt:`` marker, so the tuned model sees what it was
trained on. Each excerpt chunk carries its location label (``[chunk 3, chars 1200-2100]``) and the
instruction asks the model to quote the text it relies on; the UI locates every quote in the contract
(``documents.locate_quotes``) and shows where it is, or that it was not found.

The prompt fits the model's context: the token budget is ``context_tokens - max_tokens - margin`` minus the
system prompt, the instruction and earlier turns, estimated as characters / ``chars_per_token``; the
excerpts get what is left (``documents.select_chunks``). Earlier turns are kept, newest first, only while
they fit in ``history_share`` of the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lexalign.data import prompts
from lexalign.serve.documents import Chunk, Document, Selection, excerpt_block, select_chunks

# The 41 CUAD categories with their descriptions, from CUAD v1's category_descriptions.csv (The Atticus
# Project, CC BY 4.0), in CUAD's order. The shipped SFT data uses the same names and descriptions.
CUAD_CATEGORIES: dict[str, str] = {
    "Document Name": "The name of the contract",
    "Parties": "The two or more parties who signed the contract",
    "Agreement Date": "The date of the contract",
    "Effective Date": "The date when the contract is effective",
    "Expiration Date": "On what date will the contract's initial term expire?",
    "Renewal Term": "What is the renewal term after the initial term expires? This includes automatic extensions and unilateral extensions with prior notice",
    "Notice Period to Terminate Renewal": "What is the notice period required to terminate renewal?",
    "Governing Law": "Which state/country's law governs the interpretation of the contract?",
    "Most Favored Nation": "Is there a clause that if a third party gets better terms on the licensing or sale of technology/goods/services described in the contract, the buyer of such technology/goods/services under the contract shall be entitled to those better terms?",
    "Non-Compete": "Is there a restriction on the ability of a party to compete with the counterparty or operate in a certain geography or business or technology sector?",
    "Exclusivity": "Is there an exclusive dealing commitment with the counterparty? This includes a commitment to procure all \u201crequirements\u201d from one party of certain technology, goods, or services or a prohibition on licensing or selling technology, goods or services to third parties, or a prohibition on collaborating or working with other parties), whether during the contract or after the contract ends (or both)",
    "No-Solicit of Customers": "Is a party restricted from contracting or soliciting customers or partners of the counterparty, whether during the contract or after the contract ends (or both)?",
    "Competitive Restriction Exception": "This category includes the exceptions or carveouts to Non-Compete, Exclusivity and No-Solicit of Customers above",
    "No-Solicit of Employees": "Is there a restriction on a party\u2019s soliciting or hiring employees and/or contractors from the counterparty, whether during the contract or after the contract ends (or both)?",
    "Non-Disparagement": "Is there a requirement on a party not to disparage the counterparty?",
    "Termination for Convenience": "Can a party terminate this contract without cause (solely by giving a notice and allowing a waiting period to expire)?",
    "Rofr/Rofo/Rofn": "Is there a clause granting one party a right of first refusal, right of first offer or right of first negotiation to purchase, license, market, or distribute equity interest, technology, assets, products or services?",
    "Change of Control": "Does one party have the right to terminate or is consent or notice required of the counterparty if such party undergoes a change of control, such as a merger, stock sale, transfer of all or substantially all of its assets or business, or assignment by operation of law?",
    "Anti-Assignment": "Is consent or notice required of a party if the contract is assigned to a third party?",
    "Revenue/Profit Sharing": "Is one party required to share revenue or profit with the counterparty for any technology, goods, or services?",
    "Price Restrictions": "Is there a restriction on the ability of a party to raise or reduce prices of technology, goods, or services provided?",
    "Minimum Commitment": "Is there a minimum order size or minimum amount or units per-time period that one party must buy from the counterparty under the contract?",
    "Volume Restriction": "Is there a fee increase or consent requirement, etc. if one party\u2019s use of the product/services exceeds certain threshold?",
    "IP Ownership Assignment": "Does intellectual property created by one party become the property of the counterparty, either per the terms of the contract or upon the occurrence of certain events?",
    "Joint IP Ownership": "Is there any clause providing for joint or shared ownership of intellectual property between the parties to the contract?",
    "License Grant": "Does the contract contain a license granted by one party to its counterparty?",
    "Non-Transferable License": "Does the contract limit the ability of a party to transfer the license being granted to a third party?",
    "Affiliate License-Licensor": "Does the contract contain a license grant by affiliates of the licensor or that includes intellectual property of affiliates of the licensor?",
    "Affiliate License-Licensee": "Does the contract contain a license grant to a licensee (incl. sublicensor) and the affiliates of such licensee/sublicensor?",
    "Unlimited/All-You-Can-Eat-License": "Is there a clause granting one party an \u201centerprise,\u201d \u201call you can eat\u201d or unlimited usage license?",
    "Irrevocable or Perpetual License": "Does the contract contain a license grant that is irrevocable or perpetual?",
    "Source Code Escrow": "Is one party required to deposit its source code into escrow with a third party, which can be released to the counterparty upon the occurrence of certain events (bankruptcy, insolvency, etc.)?",
    "Post-Termination Services": "Is a party subject to obligations after the termination or expiration of a contract, including any post-termination transition, payment, transfer of IP, wind-down, last-buy, or similar commitments?",
    "Audit Rights": "Does a party have the right to audit the books, records, or physical locations of the counterparty to ensure compliance with the contract?",
    "Uncapped Liability": "Is a party\u2019s liability uncapped upon the breach of its obligation in the contract? This also includes uncap liability for a particular type of breach such as IP infringement or breach of confidentiality obligation",
    "Cap on Liability": "Does the contract include a cap on liability upon the breach of a party\u2019s obligation? This includes time limitation for the counterparty to bring claims or maximum amount for recovery",
    "Liquidated Damages": "Does the contract contain a clause that would award either party liquidated damages for breach or a fee upon the termination of a contract (termination fee)?",
    "Warranty Duration": "What is the duration of any warranty against defects or errors in technology, products, or services provided under the contract?",
    "Insurance": "Is there a requirement for insurance that must be maintained by one party for the benefit of the counterparty?",
    "Covenant Not to Sue": "Is a party restricted from contesting the validity of the counterparty\u2019s ownership of intellectual property or otherwise bringing a claim against the counterparty for matters unrelated to the contract?",
    "Third Party Beneficiary": "Is there a non-contracting party who is a beneficiary to some or all of the clauses in the contract and therefore can enforce its rights against a contracting party?",
}

# Extra retrieval words for categories whose name and description miss the words contracts use.
_CATEGORY_HINTS = {
    "Governing Law": "governed construed laws state jurisdiction",
    "Parties": "between by and among corporation company llc inc",
    "Document Name": "agreement title",
    "Agreement Date": "dated as of date entered",
    "Effective Date": "effective date commence",
    "Expiration Date": "term expire expiration years initial",
    "Renewal Term": "renew renewal automatically successive term",
    "Notice Period to Terminate Renewal": "notice renewal non-renewal days prior",
    "Termination for Convenience": "terminate termination convenience notice days without cause",
    "Cap on Liability": "liability exceed aggregate limit damages",
    "Uncapped Liability": "liability unlimited indemnification gross negligence",
    "Anti-Assignment": "assign assignment consent transfer",
    "Insurance": "insurance coverage insured policy",
    "Audit Rights": "audit books records inspect",
    "Non-Compete": "compete competitor competing business",
    "Change of Control": "change control merger acquisition",
    "Liquidated Damages": "liquidated damages termination fee",
}

TASKS: dict[str, str] = {
    "clause": "Find a clause (CUAD category)",
    "unfair": "Flag potentially unfair clauses",
    "obligations": "Summarize obligations and dates",
    "question": "Ask a question",
}

_UNFAIR_QUERY = " ".join(f"{name} {reason}" for name, reason in prompts.UNFAIR_CATEGORIES.values()) + (
    " arbitration terminate suspend account discretion change modify terms notice liable liability damages "
    "court jurisdiction governed law remove content use acceptance privacy policy")
_OBLIGATIONS_QUERY = ("shall must agree obligation obligations pay payment fee invoice deliver provide perform within "
                      "days date dates term effective expire expiration renew renewal notice deadline period months "
                      "years no later than prior")
MIN_EXCERPT_TOKENS = 48  # below this a review would see almost no contract text: refuse instead
CITE_INSTRUCTION = "Quote the contract text you rely on exactly, with its [chunk] label."


@dataclass(frozen=True)
class ReviewRequest:
    task: str                 # a key of TASKS
    category: str | None = None
    question: str | None = None

    def display(self) -> str:
        """How the lawyer's request shows in the conversation."""
        if self.task == "clause":
            return f"Find the {self.category} clause."
        if self.task == "unfair":
            return "Flag potentially unfair clauses."
        if self.task == "obligations":
            return "Summarize the obligations and dates."
        return self.question or ""

    def query(self) -> str:
        """The words the excerpts are chosen by."""
        if self.task == "clause":
            name = self.category or ""
            return f"{name} {CUAD_CATEGORIES.get(name, '')} {_CATEGORY_HINTS.get(name, '')}"
        if self.task == "unfair":
            return _UNFAIR_QUERY
        if self.task == "obligations":
            return _OBLIGATIONS_QUERY
        return self.question or ""

    def instruction(self, with_excerpts: bool) -> str:
        """The user message before the excerpts (training wording where there is one)."""
        if self.task == "clause":
            name = self.category or ""
            description = CUAD_CATEGORIES.get(name, name).rstrip(".")
            return (f"Find the {name} clause in this contract excerpt ({description}). "
                    f"Quote it exactly, or answer '{prompts.NOT_PRESENT}'")
        if self.task == "unfair":  # the CLAUDETTE training question, for several clauses
            return ("Which clauses in this contract excerpt are potentially unfair to consumers? Quote each one, "
                    f"name its category and say why; if none, answer '{prompts.FAIR_ANSWER}'")
        if self.task == "obligations":
            return ("Summarize the obligations of each party and the key dates and deadlines (terms, notice "
                    "periods, payment dates) in this contract excerpt. " + CITE_INSTRUCTION)
        question = (self.question or "").strip()
        return f"{question} {CITE_INSTRUCTION}" if with_excerpts else question


def validate_request(request: ReviewRequest) -> str | None:
    """A message for the lawyer when the request cannot be sent, else None."""
    if request.task not in TASKS:
        return f"Unknown review task {request.task!r}; pick one from the list."
    if request.task == "clause" and request.category not in CUAD_CATEGORIES:
        return "Pick a clause category first."
    if request.task == "question" and not (request.question or "").strip():
        return "Type a question first."
    return None


@dataclass(frozen=True)
class Budget:
    context_tokens: int
    max_tokens: int              # the answer
    chars_per_token: float
    margin_tokens: int = 32      # chat-template tokens and estimation error
    history_share: float = 0.3   # earlier turns may use at most this share of the prompt budget

    def tokens(self, text: str) -> int:
        return int(len(text) / self.chars_per_token) + 1

    @property
    def prompt_tokens(self) -> int:
        return self.context_tokens - self.max_tokens - self.margin_tokens


@dataclass
class BuiltPrompt:
    messages: list[dict[str, str]]
    selection: Selection | None
    history_turns: int            # earlier (question, answer) pairs included
    estimated_tokens: int
    sources: list[Chunk] = field(default_factory=list)

    def source_labels(self) -> list[str]:
        return [c.label() for c in self.sources]


def build_prompt(request: ReviewRequest, document: Document | None, history: list[tuple[str, str]],
                 budget: Budget, system_prompt: str = prompts.SYSTEM_PROMPT, max_chunks: int = 8) -> BuiltPrompt:
    """Messages for one review request: system, earlier turns that fit, then instruction + excerpts.

    ``history`` holds earlier (user text, answer) pairs as displayed (without their excerpts).
    Raises ValueError when even the instruction alone does not fit the context.
    """
    instruction = request.instruction(with_excerpts=document is not None)
    fixed = budget.tokens(system_prompt) + budget.tokens(instruction) + budget.tokens(prompts.EXCERPT_MARKER) + 8
    available = budget.prompt_tokens - fixed
    if available <= 0:
        raise ValueError(f"the question is too long for the model's context ({budget.context_tokens} tokens with "
                         f"{budget.max_tokens} for the answer); shorten it")
    kept: list[tuple[str, str]] = []
    history_budget = int(available * budget.history_share) if document is not None else available
    used = 0
    for user_text, answer in reversed(history):
        cost = budget.tokens(user_text) + budget.tokens(answer) + 8
        if used + cost > history_budget:
            break
        kept.insert(0, (user_text, answer))
        used += cost
    available -= used
    if document is not None and available < MIN_EXCERPT_TOKENS:
        raise ValueError(f"the model's context ({budget.context_tokens} tokens, {budget.max_tokens} of them for the "
                         f"answer) leaves only {max(available, 0)} tokens for contract text; ask a shorter question "
                         "(or serve the model with a longer max_model_len)")
    messages = [{"role": "system", "content": system_prompt}]
    for user_text, answer in kept:
        messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
    selection = None
    sources: list[Chunk] = []
    if document is not None and document.chunks:
        selection = select_chunks(document.chunks, request.query(), available, budget.chars_per_token, max_chunks)
        sources = selection.chunks
        content = f"{instruction}{prompts.EXCERPT_MARKER}{excerpt_block(sources)}"
    else:
        content = instruction
    messages.append({"role": "user", "content": content})
    estimated = sum(budget.tokens(m["content"]) + 4 for m in messages)
    return BuiltPrompt(messages, selection, len(kept), estimated, sources)


def request_from_dict(data: dict[str, Any]) -> ReviewRequest:
    return ReviewRequest(str(data.get("task", "")), data.get("category"), data.get("question"))
