"""Maps the top-level folders to import names that cannot collide in a user's environment.

`service/` installs as `vigor_service` and `client/` as `vigor_client`; every subpackage below them
is found automatically, so adding a folder with an `__init__.py` needs no edit here.
"""

from setuptools import find_packages, setup

FOLDERS = {"vigor_service": "service", "vigor_client": "client"}

packages = []
for name, folder in FOLDERS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir=FOLDERS, package_data={"vigor_client": ["py.typed"]})
