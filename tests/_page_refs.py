"""What a report page refers to, read with the standard library's HTML parser (shared by the report tests)."""

from __future__ import annotations

from html.parser import HTMLParser


class PageRefs(HTMLParser):
    """Every image src and link href in a page, and every tag that could load something from elsewhere."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.external_loads: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag in ("script", "link", "iframe", "object", "embed") or (tag == "img" and "://" in a.get("src", "")):
            self.external_loads.append(f"<{tag} {a}>")

    @property
    def svg_links(self) -> list[str]:
        """The links to SVG files (each figure's vector twin), in page order."""
        return [href for href in self.links if href and href.endswith(".svg")]
