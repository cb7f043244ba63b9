"""Test domains. Each module here defining a ``DomainBase`` subclass is a domain;
its name is the module name. Drop your own module here to add one."""
