"""Contacts: each subscriber's personal address book, and the shared
directory of subscribers and connector entries it searches."""
