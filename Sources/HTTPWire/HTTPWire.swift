// Placeholder: replaced when the HTTPWire module lands.
