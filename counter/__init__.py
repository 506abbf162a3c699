"""The counter: caller keypad, LED window display and 好差评 rating pad at each window."""
