// Placeholder: replaced when the JobStore module lands.
