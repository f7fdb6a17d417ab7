// Placeholder: replaced when the COSSigning module lands.
