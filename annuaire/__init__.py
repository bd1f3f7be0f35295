"""The professional directory: this operator's own mailboxes and the national extraction.

A leaf package: it imports nothing of `mss`, `smtp`, `imap` or `web`. Callers hand it a SQLAlchemy
async engine or session; its tables live on `annuaire.model.Base.metadata` and are created
by the migrations of `mss.db`.
"""

# Register the national directory tables on the shared metadata (annuaire.model.Base), so that
# whoever imports the package (migrations, tests) sees every directory table.
from annuaire import national as _national  # noqa: F401
