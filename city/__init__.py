"""The city view: every hall's event feed rolled up into PostgreSQL, exactly once."""
