"""Lists: people join by hand (a form, an import, the API), beside automatic segments.

* :mod:`.service` – create, update, archive, delete and look up lists.
* :mod:`.members` – subscribe, unsubscribe and remove customers (set-based), the
  members, counts over time.
* :mod:`.optin` – the public sign-up: double opt-in, signed confirmation and
  unsubscribe links, the confirmation email, the embeddable form.
"""
