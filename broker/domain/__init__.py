"""The broker's domain: plain dataclasses, errors and the clock. No framework imports here."""
