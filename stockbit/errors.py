"""The one error type the codec raises."""


class ProtocolError(Exception):
    """Bytes or text that do not follow the Stockbit wire protocol.

    Every decoder in :mod:`stockbit` raises this, and only this, for malformed input:
    truncated or over-long varints, lengths past the end of the buffer, wrong wire types,
    invalid UTF-8, a book body that breaks its grammar, an unparseable timestamp.
    """
