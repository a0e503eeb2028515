"""_export"""
