"""Offline tooling: scenario captures, detector evaluation and reference-doc rendering.

Nothing here runs in the daemon, and the daemon never imports this package (a test
checks it): these modules may pull in scapy, scikit-learn's metrics or the whole
analysis stack for one-shot use. ``cli`` loads ``evaluate`` lazily as a subcommand;
``python -m netmon_exporter.tools.reference_docs`` (``make docs``) renders the docs.
"""
