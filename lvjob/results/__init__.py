"""results: what a finished (or partial) study shows.

The run index as typed entries (`index`), the written tables and summary (`aggregate`), the
tables of SPEC §8 as pure functions (`report`), their renderers to Markdown, CSV and LaTeX
(`tables`), and the plots (`plots`).
"""
