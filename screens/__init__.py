"""Front of house: the hall board, window rating screens, the citizen's ticket page
and voice calling."""
