"""The daemon's collaborators, one job each; `daemon.py` wires them and runs the loop.

- `parts`: what runs under the current config (ingest, windows, analysis, summaries,
  alerts, allow-lists), built once at start-up;
- `reload`: the config holder and the all-or-nothing reload (prepare, then commit);
- `component_errors`: the last error of each optional component (LLM, Alertmanager);
- `events`: ingest events → metrics, the recent-failures window, flows into windows;
- `windows`: flows into windows; a closed window → analysis → triage → report;
- `alerts`: findings → allow-lists, caps and incidents; the Alertmanager pusher thread;
- `reports`: the reporter thread (LLM or templated summaries, JSON reports);
- `health_monitor`: health (and its metrics) from ingest status and component errors.

Only `daemon` imports this package (tests/test_architecture.py checks); its modules may
import each other and anything `daemon` may import, except `daemon` and `tools/`.
"""
