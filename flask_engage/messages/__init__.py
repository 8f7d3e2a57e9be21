"""Messages: templates, broadcasts, delivery and unsubscribes (channels live in ``channels``)."""
