from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.contrib.auth.views import redirect_to_login
from django_htmx.http import HttpResponseClientRedirect


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Everything needs a login, except ``/api/`` where DRF answers 401/403 itself.

    Token-authenticated API clients are only recognised inside DRF views, so redirecting them
    to the login page here would lock them out. An htmx call whose session expired gets an
    ``HX-Redirect`` so the whole page goes to the login form, not just the swapped fragment.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    def handle_no_permission(self, request, view_func):
        if request.headers.get("HX-Request") == "true":
            login = redirect_to_login(
                request.headers.get("HX-Current-URL") or request.get_full_path(),
                self.get_login_url(view_func),
                self.get_redirect_field_name(view_func),
            )
            return HttpResponseClientRedirect(login.url)
        return super().handle_no_permission(request, view_func)
