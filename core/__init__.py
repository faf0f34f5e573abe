"""StepScope domain logic. Plain Python: nothing here imports Streamlit."""

__version__ = "0.1.0"
