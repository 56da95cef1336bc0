"""The contract view of the chat UI: the contract's text as HTML with its sections anchored and the cited passages
marked, and the links that scroll the view to a passage.

Everything from the contract or the model is escaped (``inert``), so a contract holding markup shows it as text.
Marks cannot cross in HTML, so overlapping citations are planned first (``plan_marks``): a citation inside an
earlier mark links to that mark. A link's click is handled by one listener on the page (``CITE_LINKS_JS``) that
scrolls the view's own box, not the page.
"""

from __future__ import annotations

import html
from typing import Any

CONTRACT_VIEW_HEIGHT_PX = 460  # as the conversation beside it
NO_CONTRACT_VIEW = "Load a contract to read it here; the passages an answer quotes are marked."
# A citation link scrolls the contract view (its own scroll box, not the page) so the marked passage is in sight,
# and marks it current. One listener on the document, in the capture phase so that it runs before Markdown's own
# link handling; registered once per page however often the view renders.
CITE_LINKS_JS = """
if (!window.lexalignCiteLinks) {
  window.lexalignCiteLinks = true;
  document.addEventListener('click', (event) => {
    const link = event.target instanceof Element ? event.target.closest('a.cite-link') : null;
    const mark = link ? document.getElementById((link.getAttribute('href') || '').slice(1)) : null;
    const box = mark ? mark.closest('.contract-text') : null;
    if (!box) return;
    event.preventDefault();
    const offset = mark.getBoundingClientRect().top - box.getBoundingClientRect().top;
    box.scrollTop = Math.max(0, box.scrollTop + offset - box.clientHeight / 3);
    box.querySelectorAll('mark.current').forEach((other) => other.classList.remove('current'));
    mark.classList.add('current');
    box.scrollIntoView({block: 'nearest'});
  }, true);
}
"""


def inert(text: str | None) -> str:
    """Text for a Markdown component: every HTML special character escaped, so nothing in it runs."""
    return html.escape(text or "", quote=True)


def is_located(citation: dict[str, Any]) -> bool:
    return bool(citation.get("found")) and citation.get("start") is not None and citation.get("end") is not None


def cite_link(target: str | None, text: str, title: str | None) -> str:
    """A citation as a link that scrolls the contract view to its mark; plain text when the view does not mark it."""
    if target is None:
        return inert(text)
    hover = f" title='{inert(title)}'" if title else ""
    return f"<a class='cite-link' href='#{inert(target)}'{hover}>{inert(text)}</a>"


def plan_marks(spans: list[tuple[str, int, int, str]]) -> tuple[list[tuple[str, int, int, str]], dict[str, str]]:
    """Marks that do not overlap (HTML elements cannot cross), and the mark each span's link scrolls to.

    Spans are taken by start, the longer first. A span inside an earlier mark is shown by that mark (its link goes
    there); one that overlaps an earlier mark is marked from where that one ends.
    """
    marks: list[tuple[str, int, int, str]] = []
    targets: dict[str, str] = {}
    covered = 0  # end of the last mark
    for ident, start, end, title in sorted(spans, key=lambda span: (span[1], -span[2])):
        if marks and start < covered:
            if end <= covered:
                targets[ident] = marks[-1][0]
                continue
            start = covered
        marks.append((ident, start, end, title))
        targets[ident] = ident
        covered = end
    return marks, targets


def contract_html(document: Any, spans: list[tuple[str, int, int, str]]) -> str:
    """The contract for the contract view: every character escaped, an anchor at each section start, the spans
    marked (``<mark id="cite-1" class="cite">``). The scroll box is the view's own, so a link scrolls it alone."""
    box = f"<div class='contract-text' tabindex='0' style='height: {CONTRACT_VIEW_HEIGHT_PX}px; overflow-y: auto'>"
    if document is None:
        return f"{box}<em>{inert(NO_CONTRACT_VIEW)}</em></div>"
    marks, _ = plan_marks(spans)
    # (offset, order, tag): at one offset a mark closes before an anchor, and both before a mark opens
    tags = [(offset, 1, f"<a id='section-{n}' class='section-start' title='{inert(label)}'></a>")
            for n, (offset, label) in enumerate(document.sections, start=1)]
    for ident, start, end, title in marks:
        tags += [(start, 2, f"<mark id='{inert(ident)}' class='cite' title='{inert(title)}'>"), (end, 0, "</mark>")]
    tags.sort(key=lambda tag: (tag[0], tag[1]))
    text = document.text
    parts = [f"<div class='contract-name'>{inert(document.name)}</div>", box]
    position = 0
    for offset, _, tag in tags:
        parts += [inert(text[position:offset]), tag]
        position = offset
    parts += [inert(text[position:]), "</div>"]
    return "".join(parts)
