"""Copy counting: a probe catalog and several tracer backends behind one interface (base.py)."""
