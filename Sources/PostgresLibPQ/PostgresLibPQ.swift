// Placeholder: replaced when the PostgresLibPQ module lands.
