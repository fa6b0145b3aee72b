"""Who is calling, and may they: principals, the method policy, the interceptor."""
