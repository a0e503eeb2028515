"""_master"""
