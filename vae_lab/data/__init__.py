"""LightningDataModules for every model family; nothing here knows about models."""
