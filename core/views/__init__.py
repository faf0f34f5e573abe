"""The app's view models: what each page shows and the inputs it accepts, computed from the store (no Streamlit)."""
