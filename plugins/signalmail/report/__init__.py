"""`signalmail report`: one HTML page of what the pipeline did, for the people who run it."""

from signalmail.report.build import REPORT_MODELS, build_report
from signalmail.report.data import ReportData

__all__ = ["REPORT_MODELS", "ReportData", "build_report"]
