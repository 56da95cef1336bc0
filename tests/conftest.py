"""Shared test fixtures: a tiny model built locally (never downloaded) and the text it is built from.

Threads: the test suite runs tiny models on a 2-core machine, often beside other work; one intra-op
thread is faster and steadier there, so ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` default to 1 for the
test session (set before torch is imported; export them to override). Subprocesses inherit them.

Fixtures:
    tiny_corpus_text   str: ~200 KB of the shipped pretraining corpus (or a built-in contract-like text)
    tiny_corpus_file   Path: that text in a file (for configs that take ``corpus=<file>``)
    tiny_model_dir     Path: a miniature Llama + tokenizer + ChatML template folder, loadable with
                       AutoModelForCausalLM / AutoTokenizer (vocab <= 512, hidden 128, 2 layers, 2 heads of 64,
                       30 pretraining steps). Session-scoped and shared: never write into it; copy it first.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests check behaviour, not speed: on a shared 2-core machine one example can take longer
# than hypothesis's default 200 ms deadline, which would fail a correct test.
settings.register_profile("lexalign", deadline=None)
settings.load_profile("lexalign")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CORPUS_CHARS = 200_000

# A few KB of contract-like text, used only when the shipped corpus is not there.
BUILTIN_CORPUS = """\
MASTER SERVICES AGREEMENT
This Master Services Agreement (the "Agreement") is entered into as of January 1, 2020 (the "Effective Date") by and between Acme Corporation, a Delaware corporation ("Customer"), and Beta Services LLC, a New York limited liability company ("Provider").
1. Services. Provider shall perform the services described in each Statement of Work (the "Services") in a professional and workmanlike manner.
2. Fees. Customer shall pay Provider the fees set forth in each Statement of Work within thirty (30) days after receipt of an undisputed invoice.
3. Term. This Agreement shall commence on the Effective Date and continue for a period of three (3) years, unless terminated earlier in accordance with this Agreement.
4. Renewal. This Agreement shall automatically renew for successive one (1) year terms unless either party gives written notice of non-renewal at least ninety (90) days before the end of the then-current term.
5. Termination for Convenience. Either party may terminate this Agreement for convenience upon sixty (60) days prior written notice to the other party.
6. Termination for Cause. Either party may terminate this Agreement immediately upon written notice if the other party materially breaches this Agreement and fails to cure such breach within thirty (30) days.
7. Confidentiality. Each party shall hold the Confidential Information of the other party in strict confidence and shall not disclose it to any third party without the prior written consent of the disclosing party.
8. Limitation of Liability. In no event shall either party be liable for any indirect, incidental, special, consequential or punitive damages. Each party's aggregate liability under this Agreement shall not exceed the fees paid by Customer in the twelve (12) months preceding the claim.
9. Indemnification. Provider shall indemnify, defend and hold harmless Customer from and against any and all claims, losses and damages arising out of Provider's gross negligence or willful misconduct.
10. Governing Law. This Agreement shall be governed by and construed in accordance with the laws of the State of New York, without regard to its conflict of laws principles.
11. Assignment. Neither party may assign this Agreement without the prior written consent of the other party, except to a successor in connection with a merger or acquisition.
12. Non-Compete. During the term of this Agreement and for one (1) year thereafter, Provider shall not provide similar services to any direct competitor of Customer.
13. Insurance. Provider shall maintain commercial general liability insurance with limits of not less than $1,000,000 per occurrence.
14. Audit Rights. Customer may, upon reasonable notice, audit Provider's records relating to the Services once per calendar year.
15. Notices. All notices under this Agreement shall be in writing and delivered to the addresses set forth above.
16. Entire Agreement. This Agreement constitutes the entire agreement between the parties and supersedes all prior agreements and understandings.
TERMS OF SERVICE
By using the service you agree to these terms. We may change these terms at any time without notice.
We may terminate your account at any time for any reason.
We are not liable for any loss of data or profits arising from your use of the service.
Any dispute shall be resolved by binding arbitration in San Francisco, California.
We may remove any content that you post at our sole discretion.
These terms are governed by the laws of the State of California.
"""


def _shipped_corpus() -> Path:
    return REPO_ROOT / "data" / "shipped" / "pretrain_corpus.txt"


@pytest.fixture(scope="session")
def tiny_corpus_text() -> str:
    """The first ~200 KB of the shipped corpus (cut at a line end), else the built-in text repeated."""
    path = _shipped_corpus()
    if path.is_file():
        text = path.read_text(encoding="utf-8")[:TINY_CORPUS_CHARS]
        return text[: text.rfind("\n") + 1] or text
    return BUILTIN_CORPUS * 8


@pytest.fixture(scope="session")
def tiny_corpus_file(tmp_path_factory: pytest.TempPathFactory, tiny_corpus_text: str) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(tiny_corpus_text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_corpus_text: str) -> Path:
    """A miniature model folder built once per session (a few seconds). Read-only for tests: copy to modify."""
    from lexalign.basemodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", tiny_corpus_text, pretrain_steps=30)
