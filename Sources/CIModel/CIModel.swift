// Placeholder: replaced when the CIModel module lands.
