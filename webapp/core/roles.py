"""The three roles of FGAM Studio, as Django groups created by a data migration."""

CURATOR = "curator"
ANNOTATOR = "annotator"
RATER = "rater"
ROLES = (CURATOR, ANNOTATOR, RATER)


def has_role(user, role: str) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=role).exists()
