// Placeholder: replaced when the HTTPListener module lands.
