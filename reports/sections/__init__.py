"""Report sections: each module has ``TITLE`` and ``build(ctx) -> Section``."""
