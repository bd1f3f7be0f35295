"""MSS core: configuration, storage, delivery, policy and the `mss` command.

Front ends (`smtp`, `imap`, `web`) call the services of this package; the leaves
(`annuaire`, `crypto`) are imported by it and never import it back.
"""
