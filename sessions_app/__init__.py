"""Persist the execution-session records of an agent-governance runtime.

A reusable Django app: the ``ExecutionSession`` model, an async
``SessionStore`` service that mirrors the runtime's Rust contract
(``sessions_app.storage``), Django admin pages and a REST API.
"""

__version__ = "0.1.0"
