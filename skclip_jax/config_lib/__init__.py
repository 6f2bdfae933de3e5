"""The config machinery every config file shares: the base config, variants, open-vocabulary variants and
validation. Config files import it from the installed package, so they load by path from any folder."""
