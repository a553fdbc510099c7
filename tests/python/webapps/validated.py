"""The test applications wrapped in wsgiref.validate.validator, which checks
what the server gives the application and what it does with the result."""

from wsgiref.validate import validator

import wsgi_apps

router = validator(wsgi_apps.router)


def flask():
    import flask_app
    return validator(flask_app.app)
