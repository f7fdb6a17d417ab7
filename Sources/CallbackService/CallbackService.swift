// Placeholder: replaced when the CallbackService module lands.
