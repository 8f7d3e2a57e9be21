"""Messages: templates, broadcasts, delivery over email, web push and in-app."""
