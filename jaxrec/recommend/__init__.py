"""The purchase-replay protocol (protocol.py) and candidate scoring (scoring.py)."""
