"""Contract tests of the tracker plugins against documented payloads (see conftest)."""
