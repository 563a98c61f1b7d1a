from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.views.defaults import permission_denied as forbidden
from django_htmx.http import HttpResponseClientRedirect

from webapp.core.policy import refusal, rule_of


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


class PolicyMiddleware:
    """Apply a view's policy rule (``webapp.core.policy.allow``) before any other view middleware.

    Placed before ``CsrfViewMiddleware``, whose check parses a POST form (and spools an upload
    to disk) looking for its token: a request the policy refuses gets its answer before anything
    reads the body. Views without a rule (the API, which applies the policy in DRF) pass.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        rule = rule_of(view_func)
        if rule is None:
            return None
        try:
            return refusal(request, rule)
        except PermissionDenied as denied:
            return forbidden(request, denied)
