import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from webapp.core.roles import ROLES


class Command(BaseCommand):
    help = "Create (or reset) one demo user per role and print their passwords."

    def handle(self, *args, **options):
        User = get_user_model()
        self.stdout.write("Demo users (passwords are new on every run):")
        for role in ROLES:
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username=role)
            user.set_password(password)
            # The curator also gets the admin site, where datasets and runs can be inspected.
            user.is_staff = user.is_superuser = role == "curator"
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            self.stdout.write(f"  {role:<10} password: {password}")
