"""Reading server-rendered pages in tests: elements by tag, id and class, with their text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


@dataclass
class Element:
    """One element: tag, attributes and all the text inside it."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        """Its class names."""
        return set((self.attrs.get("class") or "").split())


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.all: list[Element] = []
        self.open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        if self.open:
            self.open[-1].children.append(element)
        self.all.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i].tag == tag:
                del self.open[i:]
                break

    def handle_data(self, data: str) -> None:
        for element in self.open:
            element.text += data


def find_all(page: str, tag: str | None = None, cls: str | None = None, **attrs: str
             ) -> list[Element]:
    """Elements of a page by tag, class and attributes (`id="x"`, `name="y"`)."""
    parser = _Collect()
    parser.feed(page)
    return [e for e in parser.all if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def find(page: str, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element:
    """The one element that matches (AssertionError when none or several do)."""
    found = find_all(page, tag, cls, **attrs)
    assert len(found) == 1, f"{len(found)} elements match {tag} {cls} {attrs}"
    return found[0]


def svg_of(page: str) -> ET.Element:
    """The page's (first) inline SVG, parsed as XML."""
    start = page.index("<svg")
    return ET.fromstring(page[start:page.index("</svg>", start) + len("</svg>")])
