"""Report writers over a ``store.report.RunReport``: JUnit XML and the JSON result
(shared by `run --batch`, `ktest` and `history report`), KTAP v1 (also streamed by
`run --batch --ktap`), Markdown for CI step summaries, self-contained HTML with SVG
trends, KCIDB v5 for KernelCI; ``compare`` sets environments' latest runs side by side.
``output`` checks a report's path before a run and writes the files atomically."""
