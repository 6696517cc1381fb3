"""The incident workbook's library: process supervision, fault links, notebook conventions and the runner.

Kept import-light on purpose: ``import workbook`` loads nothing; import the submodule you need
(``from workbook.topology import Run``).
"""
