"""Reports: terminal tables now; Markdown/LaTeX/HTML come with the studies."""
