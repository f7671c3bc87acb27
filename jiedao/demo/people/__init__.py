"""Synthetic people of the demo district: platform users now; residents and callers later."""
