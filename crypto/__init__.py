"""Certificates, identities and message encryption for MSS.

A leaf package: it imports nothing from ``mss``, ``smtp``, ``imap`` or ``annuaire``, so the
security-critical code can be read, tested and audited on its own. Modules, one job each:
``identity`` (subject -> health identity), ``validate`` (chain, usage, revocation), ``smime``
(header protection + CMS encryption), ``keys`` (PKCS#12 hand-over, wrapped keys, fingerprints),
``pki`` (a test PKI shaped like IGC-Santé), ``tokens`` (e-CPS access tokens bound to the TLS
client certificate, RFC 8705), ``dkim`` (DKIM keys and signatures), ``files`` (owner-only
files for secrets). Nothing is re-exported here so that importing one module does not load the
others.
"""
