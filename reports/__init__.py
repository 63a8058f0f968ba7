"""The plotted report: sections (data-only items), figures and the builder that writes them."""
