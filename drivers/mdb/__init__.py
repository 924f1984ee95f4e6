"""Driver for an MDB cashless reader (the machine as VMC) behind a Qibixx MDB-USB / Pi Hat adapter."""

from drivers.mdb.reader import CashlessReader, OutOfSequenceError, ReaderReset, ReaderState, VendDecision

__all__ = ["CashlessReader", "OutOfSequenceError", "ReaderReset", "ReaderState", "VendDecision"]
