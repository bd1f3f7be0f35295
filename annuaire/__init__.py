"""The professional directory: this operator's own mailboxes and the national extraction.

A leaf package: it imports nothing of `mss`, `smtp` or `imap`. Callers hand it a SQLAlchemy
async engine or session; its tables live on `annuaire.model.Base.metadata` and are created
by the migrations of `mss.db`.
"""
