"""Drawing and rendering only: matplotlib figures of computed results and the HTML report.

Nothing here computes a statistic or opens a store: the jobs hand figures their data.
"""
