from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Everything needs a login, except ``/api/`` where DRF answers 401/403 itself.

    Token-authenticated API clients are only recognised inside DRF views, so redirecting them
    to the login page here would lock them out.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)
