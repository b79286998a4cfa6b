"""The API tokens page: create named tokens (the secret is shown once), list and revoke them."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from sessions_app.tokens import token_create, token_list_for_user, token_revoke
from sessions_app.web import with_csp


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. “laptop” or “CI”.")
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Leave empty for a token that does not expire."
    )


@with_csp
@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    secret = None
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        _, secret = token_create(
            user=request.user,
            name=form.cleaned_data["name"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
        )
        form = TokenForm()
    response = render(
        request,
        "tokens.html",
        {"form": form, "secret": secret, "tokens": token_list_for_user(user=request.user), "now": timezone.now()},
    )
    # The secret is on this page once: keep it out of every cache.
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    token = token_list_for_user(user=request.user).filter(pk=token_id).first()
    if token is None:
        raise Http404("No such token.")
    token_revoke(token=token)
    return redirect("tokens")
